"""Ray roles, one file each: thin shells over the pure functions in kr1/."""
