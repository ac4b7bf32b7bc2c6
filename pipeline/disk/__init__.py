"""Disk safety: atomic writes (``atomic``), a full disk as one line and reserved space
(``space``), locks between processes (``locks``), and the fault hooks the tests and the soak
reach every write and lock point with (``faults``)."""
