"""Other chat servers, written the way their users write them, to benchmark chatfleet against."""
