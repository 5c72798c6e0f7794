"""The 6-movie preference RBM: two hidden units discover an SF/fantasy group and an Oscar group.

Six users rate Harry Potter, Avatar, LOTR 3, Gladiator, Titanic and Glitter (1 = likes). Three
like the SF/fantasy films, three the Oscar winners; LOTR 3 is both. Run:
``python examples/movies.py``.
"""

from __future__ import annotations

import torch

from rnnrbm import RBM

MOVIES = ["Harry Potter", "Avatar", "LOTR 3", "Gladiator", "Titanic", "Glitter"]
USERS = torch.tensor(
    [
        [1, 1, 1, 0, 0, 0],  # Alice: big SF/fantasy fan
        [1, 0, 1, 0, 0, 0],  # Bob: SF/fantasy fan, doesn't like Avatar
        [1, 1, 1, 0, 0, 0],  # Carol: big SF/fantasy fan
        [0, 0, 1, 1, 1, 0],  # David: big Oscar winners fan
        [0, 0, 1, 1, 0, 0],  # Eric: Oscar winners fan, except Titanic
        [0, 0, 1, 1, 1, 0],  # Fred: big Oscar winners fan
    ],
    dtype=torch.float32,
)


def train_movie_rbm(seed: int = 0) -> RBM:
    """CD-1, plain SGD: the settings of the classic blog example (lr 0.1, 5,000 epochs)."""
    rbm = RBM(n_visible=6, n_hidden=2, k=1, method="cd", init_std=0.1, seed=seed)
    return rbm.fit(USERS, epochs=5000, batch_size=6, lr=0.1, seed=seed)


def main() -> None:
    rbm = train_movie_rbm()
    fans = rbm.transform(USERS)
    sf_unit = int(fans[:3].mean(0).argmax())
    print("P(h=1 | user) for the six users (SF fans first):")
    for row in fans:
        print("  ", [f"{p:.2f}" for p in row.tolist()])
    new_user = torch.tensor([[0, 0, 0, 1, 1, 0]], dtype=torch.float32)  # likes Gladiator, Titanic
    p = rbm.transform(new_user)[0]
    print(f"SF/fantasy unit = h{sf_unit}, Oscar unit = h{1 - sf_unit}")
    print(f"new user (Gladiator, Titanic): P(h=1) = {[round(x, 2) for x in p.tolist()]}")
    for j in range(2):
        w = rbm.frame.W[:, j].tolist()
        top = [MOVIES[i] for i in sorted(range(6), key=lambda i: -w[i])[:3]]
        print(f"h{j} weights favour: {', '.join(top)}")


if __name__ == "__main__":
    main()
