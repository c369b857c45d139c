"""Reading images and ROIs with their geometry, and checking each case before any stage."""
