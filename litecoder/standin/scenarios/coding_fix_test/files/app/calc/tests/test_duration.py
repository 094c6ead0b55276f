import unittest

from calc.duration import parse_duration


class TestDuration(unittest.TestCase):
    def test_combined(self):
        self.assertEqual(parse_duration("1h30m"), 5400)

    def test_seconds(self):
        self.assertEqual(parse_duration("45s"), 45)
