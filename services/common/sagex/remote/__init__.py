"""Clients the services use to reach each other (the agent and the scorers both
probe the activation service through these)."""
