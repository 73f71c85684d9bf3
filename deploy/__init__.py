"""Deployment files: Redis, Sentinel and ACL templates and their renderer (render.py)."""
