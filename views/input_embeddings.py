"""Placeholder: this page is being built."""

import streamlit as st

st.title("input_embeddings")
st.info("This page is being built.")
