"""Active-active directors: VIPs announced over BGP by BIRD 2, driven by pylvs (docs/cluster.md).

* :mod:`pylvs.cluster.birdconf`: the BIRD configuration of a director (and of a real server's
  return route), as text; pure.
* :mod:`pylvs.cluster.birdctl`: BIRD's control-socket protocol (what ``birdc`` speaks) and the
  parsing of its ``show protocols`` / ``show bfd sessions`` answers.
* :mod:`pylvs.cluster.component`: runs BIRD for a director, announces what the director serves,
  withdraws and drains on stop, and reports BGP and BFD state.
"""
