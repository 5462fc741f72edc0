"""``method="auto"``: which evaluation, direct or FFT, a product uses.

``cost`` estimates the seconds of a direct and of an FFT product from the geometry, the
dtype and a device's constants; ``calibrate`` measures those constants on this machine and
keeps them; ``trial`` times both methods where the estimates are too close to call.
"""
