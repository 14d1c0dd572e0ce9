"""Black-box query attacks: the target is reached only through a counting oracle (:mod:`.oracle`).

Score-based attacks see class probabilities (:mod:`.square`, :mod:`.nes`, :mod:`.simba`); decision-based attacks
see only the top-1 label (:mod:`.hsj`). :mod:`.base` is their shared contract."""
