"""Real-browser end-to-end tests: the Streamlit dashboard in headless Debian Chromium."""
