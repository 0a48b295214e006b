"""BiDAF reading comprehension on CMRC 2018 (and DuReader demo), optionally with a frozen ELMo."""
import elmo_paddle  # noqa: F401  first: sets the MKL/OpenMP env vars before paddle is imported
