"""advkit.backprop"""
