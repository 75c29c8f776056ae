"""Ready models (``shendu.models``): the seed's classic algorithms with the scikit-learn
estimator API (``fit``/``predict``/``score``...) and the seed's own API (``forward``,
``backward(y, learning_rate)``, ``train(X, y, epochs, learning_rate)``)."""

from shendu.models._base import ConvergenceWarning, NotFittedError
from shendu.models.attention import CharTransformerLM, TransformerClassifier
from shendu.models.audio import AudioClassifier
from shendu.models.cnn import ConvolutionalNeuralNetwork
from shendu.models.mlp import MLPClassifier, MLPRegressor
from shendu.models.perceptron import Perceptron
from shendu.models.recurrent import (
    CharLM,
    GatedRecurrentUnit,
    LongShortTermMemory,
    RecurrentNeuralNetwork,
)
from shendu.models.seed import MultiLayerPerceptron, NeuralNetwork
from shendu.models.seq2seq import AttentionMechanism

__all__ = ["Perceptron", "MLPClassifier", "MLPRegressor", "NeuralNetwork",
           "MultiLayerPerceptron", "ConvolutionalNeuralNetwork", "ConvergenceWarning",
           "NotFittedError",
           "TransformerClassifier", "CharTransformerLM", "AttentionMechanism",
           "RecurrentNeuralNetwork", "LongShortTermMemory", "GatedRecurrentUnit", "CharLM",
           "AudioClassifier"]
