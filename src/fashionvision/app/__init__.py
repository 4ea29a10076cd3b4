"""fashionvision.app"""
