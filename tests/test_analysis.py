"""workbench.analysis: predictions with test-time augmentation, the confusion matrix, mistakes."""

import pytest
import torch

import utils
from fakes import TINY_TEST
from workbench import analysis

CPU = torch.device("cpu")


@pytest.fixture
def test_loader(tiny_root):
    return utils.get_data_loaders(data_dir=tiny_root, test_batch_size=16)[1]


@pytest.fixture
def small_loader(tiny_root):
    """Two batches of 8 test images: test-time augmentation predicts each image five times."""
    return utils.get_data_loaders(data_dir=tiny_root, test_batch_size=8, max_samples=16)[1]


def test_predict_covers_the_whole_test_set(model, test_loader):
    predictions, confidences, targets = analysis.predict(model, test_loader, CPU)
    assert predictions.shape == confidences.shape == targets.shape == (TINY_TEST,)
    assert torch.equal(targets, test_loader.dataset.labels)
    assert ((confidences >= 0.1) & (confidences <= 1)).all()  # a max over 10 probabilities


def test_predict_gives_the_models_most_probable_class(model, test_loader):
    predictions, confidences, _ = analysis.predict(model, test_loader, CPU)
    x = torch.cat([x for x, _ in test_loader])
    with torch.inference_mode():
        expected = model(x).exp().max(dim=1)
    assert torch.equal(predictions, expected.indices)
    torch.testing.assert_close(confidences, expected.values)


def test_predict_puts_the_model_in_eval_mode(model, test_loader):
    model.train()
    first = analysis.predict(model, test_loader, CPU)
    assert not model.training
    second = analysis.predict(model, test_loader, CPU)  # no dropout, BatchNorm statistics fixed
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_confusion_matrix_counts():
    targets = torch.tensor([0, 0, 1, 2, 2, 2])
    predictions = torch.tensor([0, 1, 1, 2, 0, 2])
    matrix = analysis.confusion_matrix(predictions, targets, num_classes=3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    torch.testing.assert_close(
        analysis.per_class_accuracy(matrix), torch.tensor([50.0, 100.0, 200 / 3])
    )


def test_per_class_accuracy_of_a_class_never_seen_is_no_figure():
    matrix = torch.tensor([[2, 0], [0, 0]])
    accuracy = analysis.per_class_accuracy(matrix)
    assert accuracy[0] == 100.0 and accuracy[1].isnan()  # not 0%: no image of it was wrong


def test_confusion_matrix_of_a_model_sums_to_the_set_size(model, test_loader):
    predictions, _, targets = analysis.predict(model, test_loader, CPU)
    matrix = analysis.confusion_matrix(predictions, targets)
    assert matrix.shape == (10, 10) and matrix.sum() == TINY_TEST
    assert matrix.sum(dim=1).tolist() == torch.bincount(targets, minlength=10).tolist()
    assert matrix.sum(dim=0).tolist() == torch.bincount(predictions, minlength=10).tolist()


def test_misclassified_picks_only_mistakes_most_confident_first():
    targets = torch.tensor([1, 2, 3, 4, 5])
    predictions = torch.tensor([1, 7, 3, 9, 0])
    confidences = torch.tensor([0.99, 0.6, 0.9, 0.95, 0.7])
    assert analysis.misclassified(predictions, confidences, targets).tolist() == [3, 4, 1]
    assert analysis.misclassified(predictions, confidences, targets, n=2).tolist() == [3, 4]
    assert analysis.misclassified(targets, confidences, targets).tolist() == []


def test_shifted_views_move_the_image_by_whole_pixels():
    x = torch.full((1, 1, 28, 28), -1.0)
    x[0, 0, 10, 12] = 5.0
    background = (0 - utils.MNIST_MEAN) / utils.MNIST_STD  # a black pixel, normalised
    views = analysis.shifted_views(x, 2)
    assert len(views) == 5 and all(v.shape == x.shape for v in views)
    assert torch.equal(views[0], x)
    peaks = {tuple((v[0, 0] == 5.0).nonzero()[0].tolist()) for v in views}
    assert peaks == {(10, 12), (12, 12), (8, 12), (10, 14), (10, 10)}
    assert views[1][0, 0, :2].eq(background).all()  # moved down: the top rows are new background
    assert views[1][0, 0, 2:].eq(x[0, 0, :-2]).all()
    assert analysis.shifted_views(x, 0) == [x]


def test_predict_with_tta_averages_the_views(model, small_loader):
    tta = analysis.predict(model, small_loader, CPU, tta_shift=1)
    assert torch.equal(tta[2], small_loader.dataset.labels)
    x = torch.cat([x for x, _ in small_loader])
    with torch.inference_mode():
        expected = (
            torch.stack([model(v).exp() for v in analysis.shifted_views(x, 1)]).mean(0).max(1)
        )
    torch.testing.assert_close(tta[1], expected.values)
    assert torch.equal(tta[0], expected.indices)


def test_an_analysis_counts_its_mistakes():
    found = analysis.Analysis(
        predictions=torch.tensor([0, 1, 2, 2, 7]),
        confidences=torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5]),
        targets=torch.tensor([0, 1, 1, 2, 3]),
        tta_shift=0,
    )
    assert found.accuracy == pytest.approx(60.0)  # 3 of 5 right
    assert found.wrong == 2
    assert found.matrix.sum() == 5 and found.matrix[1, 2] == found.matrix[3, 7] == 1
    assert found.matrix.diag().sum() == 3


def test_analyse_is_predict_with_what_it_gives(model, small_loader):
    found = analysis.analyse(model, small_loader, CPU, tta_shift=1)
    predictions, confidences, targets = analysis.predict(model, small_loader, CPU, tta_shift=1)
    assert found.tta_shift == 1
    assert torch.equal(found.predictions, predictions) and torch.equal(found.targets, targets)
    assert torch.equal(found.confidences, confidences)
    right = int((predictions == targets).sum())
    assert found.accuracy == pytest.approx(100 * right / len(targets))
    assert found.wrong == len(targets) - right
    assert torch.equal(found.matrix, analysis.confusion_matrix(predictions, targets))
