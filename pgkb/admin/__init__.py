"""Databases pgkb does not start itself: registration, guided setup, and the doctor."""
