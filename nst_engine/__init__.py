"""nst_engine: Gatys et al. neural style transfer on a frozen VGG19, as a library, a CLI and an HTTP service."""
import os

__version__ = "0.1.0"

# Before torch loads OpenMP (libgomp reads this once): idle OpenMP threads sleep instead of spinning.
# With the default (spin), torch's threads on a box that also runs anything else burn the cores they wait
# on, and every parallel region waits for the descheduled one (benchmarks/README.md, "under load").
# An admin's own OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
