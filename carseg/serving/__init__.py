"""`carseg serve`: background removal over HTTP (FastAPI + uvicorn), its web page and its metrics."""
