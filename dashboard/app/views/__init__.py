"""The dashboard pages: each module is a Streamlit page script with a ``render()``."""
