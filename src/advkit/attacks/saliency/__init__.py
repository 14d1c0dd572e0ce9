"""White-box saliency attacks: JSMA (Papernot et al., EuroS&P 2016), an L0 attack that changes a few features
chosen by the forward derivative (:mod:`.jsma`), with its exact, memory-bounded saliency-map search
(:mod:`.search`)."""
