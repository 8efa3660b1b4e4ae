"""convbench: what does a convolutional network buy over a size-matched fully-connected one?"""
