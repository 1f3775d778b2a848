"""The Mailer front end's parts, beside the class in :mod:`mailer._mailer`.

:mod:`.build` makes what a Mailer is built from (a provider tree from config entries, the
admission gate, the outbox, the delivery events hub); :mod:`.send` holds the send path's
steps around routing (the suppression check and a template's local rendering before it,
what an unfinished send means for delivery after it). The class keeps its own hot path
(``send``, ``_deliver``) and its public methods, so that ``mailer._mailer`` stays
the one place a reader starts from.
"""
