"""Jinja2 templates of the review UI (a package so the files ship in the wheel)."""
