"""The domain: reading images, guarding input, running the pipelines, the registry and the review log. No Streamlit."""
