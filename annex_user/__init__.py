"""condor_annex: the scientist's client (launch, status, extend, terminate an annex)."""
