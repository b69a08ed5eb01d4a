"""The live dashboard (FastAPI + one static page with inline-SVG charts); see `app.py`."""
