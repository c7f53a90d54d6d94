"""The web console's face: its static files and the routes that serve them (DESIGN §14)."""
