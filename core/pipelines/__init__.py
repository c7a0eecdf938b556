"""End-to-end analyses, one module per kind of study."""
