"""White-box gradient attacks (the transfer attacker's surrogate): one iterative engine and its parts.

A part changes one point of the loop: the step rule and start (:mod:`.steps`: FGSM, I-FGSM / BIM, PGD), the update
(:mod:`.momentum`: MI, NI), the input copies (:mod:`.inputs`: DI, SI, Admix), the gradient (:mod:`.gradients`: VT,
TI), the backward pass (:mod:`.scopes`: SGM, LinBP) and a second stage (:mod:`.ila`: ILA). Any combination is an
attack: ``create("sgm+mi+di")``.
"""
