"""The domain: accounts, availability rules and slot generation, scheduling, booking,
and the typed errors they raise. No HTTP, no Lambda, no environment variables."""
