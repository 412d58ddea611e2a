"""Package data: the checked-in Environment specs and kernel config fragments."""
