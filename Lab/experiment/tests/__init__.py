# SPDX-License-Identifier: Apache-2.0
"""Unit tests of the experiment package: python3 -m unittest discover -s Lab/experiment/tests -t Lab."""
