"""Online and offline storage of profiles, events and decisions."""
