"""Layers with ``torch.nn``'s constructor signatures, each with an explicit backward."""

from .activation import ELU, Identity, LeakyReLU, LogSoftmax, ReLU, ReLU6, ScaledTanh, Sigmoid, Softmax, Tanh
from .containers import Add, Concat, Graph, Sequential
from .conv import Conv2d
from .dropout import Dropout
from .fuse import fuse_for_inference
from .linear import Flatten, Linear
from .loss import CrossEntropyLoss, MSELoss, NLLLoss
from .module import Layer, Parameter
from .norm import BatchNorm1d, BatchNorm2d, LocalResponseNorm
from .pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

Module = Layer  # the PyTorch name, for readers coming from torch.nn

__all__ = ["Layer", "Module", "Parameter", "Sequential", "Graph", "Add", "Concat", "Conv2d", "MaxPool2d",
           "AvgPool2d", "AdaptiveAvgPool2d", "Linear", "Flatten", "ReLU", "ReLU6", "LeakyReLU", "ELU", "Sigmoid",
           "Tanh", "ScaledTanh", "Softmax", "LogSoftmax", "Identity", "Dropout", "BatchNorm1d",
           "BatchNorm2d", "LocalResponseNorm", "CrossEntropyLoss", "NLLLoss", "MSELoss", "fuse_for_inference"]
