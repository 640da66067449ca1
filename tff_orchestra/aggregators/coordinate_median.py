"""`CoordinateMedian`: the coordinate-wise median of the client values (Yin et al., 2018).

Each coordinate of the result is the median of that coordinate over the
round's clients (for an even count, the mean of the two middle values, as
`numpy.median`). It tolerates fewer than half of the clients sending anything
at all, per coordinate, at the cost of a noisier estimate than the mean when
every client is honest, which grows as the clients' data differ.
It needs each client's value at the server (`client_values.py`).
"""

from __future__ import annotations

import collections

from tff_orchestra.aggregators import client_values


class CoordinateMedian(client_values.RobustEstimate):
  """`UnweightedAggregationFactory` whose result is the coordinate-wise median of the client values.

  State: `()`. Measurements (`OrderedDict`): `clients`, `non_finite_clients`.
  """

  def estimate(self, rows):
    return client_values.median(rows), collections.OrderedDict()
