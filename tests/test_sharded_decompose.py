"""Data-parallel decomposition over 8 fake CPU devices equals the single-device result (run in
the shared 8-device subprocess, ``tests/conftest.py::eight_devices``)."""

import numpy as np


def test_sharded_decomposition_equals_single_device(eight_devices):
    for case in eight_devices["decompose"]:  # exhaustive, then max_order=3
        for name, (one, par) in case.items():
            one, par = np.asarray(one), np.asarray(par)
            assert one.shape == par.shape, (name, one.shape, par.shape)
            np.testing.assert_allclose(one, par, rtol=0, atol=1e-10, err_msg=name)
