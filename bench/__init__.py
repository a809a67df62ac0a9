"""The load bench of SPEC §10: wrk against the app as users run it, with a bare "hello" ceiling."""
