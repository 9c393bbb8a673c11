"""cifar: train, diagnose and explain CIFAR-10/100 image classifiers."""

__version__ = "0.1.0"
