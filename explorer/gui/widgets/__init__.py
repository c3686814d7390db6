"""Widgets the window and the panels are built from: histogram, badges, filter bar, views, summary, dialogs."""
