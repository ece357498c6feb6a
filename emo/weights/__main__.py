from emo.weights import main

main()
