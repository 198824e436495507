"""Pure tensor transforms: colour spaces, block DCT/DFT, shifts."""
