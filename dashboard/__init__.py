"""Streamlit-side helpers of the GradLens dashboard (state, cached reads, sidebar). Pure compute
lives in ``gradlens``; this package only calls its public API."""
