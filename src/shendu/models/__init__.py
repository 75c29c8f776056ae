"""Ready models (``shendu.models``): the seed's classic algorithms with the scikit-learn
estimator API (``fit``/``predict``/``score``...) and the seed's own API (``forward``,
``backward(y, learning_rate)``, ``train(X, y, epochs, learning_rate)``)."""

from shendu.models._base import ConvergenceWarning, NotFittedError
from shendu.models.perceptron import Perceptron

__all__ = ["Perceptron", "ConvergenceWarning", "NotFittedError"]
