g3
