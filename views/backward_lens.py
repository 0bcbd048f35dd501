"""Placeholder: this page is being built."""

import streamlit as st

st.title("backward_lens")
st.info("This page is being built.")
