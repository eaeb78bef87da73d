g2
