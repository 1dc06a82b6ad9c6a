"""Load and failover tools for chatfleet that print tables (never imported by the product)."""
