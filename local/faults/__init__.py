"""The fault harness (``make faults``, issue 9 point 12): mixed events through the whole stack while
Graph, the token endpoint, storage or the host fail, then Graph's state against the newest events.

``plan`` makes the events and holds the oracle, ``sender`` delivers them as an LMS would, ``stack``
runs the parts as killable processes, ``injectors`` plays the faults through their public controls,
``runner`` measures one fault, ``__main__`` is the command line.
"""
