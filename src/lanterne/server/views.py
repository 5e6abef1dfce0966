"""The explorer: its page and one JSON endpoint per slide (placeholder, being written)."""

from fastapi import APIRouter

router = APIRouter()
