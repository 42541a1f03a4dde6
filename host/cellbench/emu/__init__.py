"""The emulated board (``--board rp2040-emu``): the firmware on the official rp2 MicroPython
image in the RP2040 emulator rp2040js (driver.mjs), with the simulated cell behind its
peripherals (board.py)."""
