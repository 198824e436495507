"""Data sets of the experiments: BAPPS 2AFC (bapps), video frames and moving sprites (video),
built-in scikit-image photographs and distortions (photos)."""
