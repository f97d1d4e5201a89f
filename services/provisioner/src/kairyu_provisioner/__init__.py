"""The provisioner: makes the planned GPU nodes exist, waits until they are Ready, frees them."""
