# TrainingRound arrives with the training-round work; training/dpo/ stays free of Django.
