"""advkit.analysis"""
