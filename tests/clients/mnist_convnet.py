"""Train a small convolutional network on MNIST digits.

A plain PyTorch script written for this project's tests in the usual shape of such scripts:
argparse options, a ``train`` and a ``test`` function that print their losses, Adadelta with
a StepLR schedule, and an optional ``torch.save`` of the state dict. torchvision's MNIST and
transforms are replaced by the local stand-ins in ``standins`` (no download)."""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from standins import datasets, transforms
from torch.optim.lr_scheduler import StepLR


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, stride=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, stride=1)
        self.drop_conv = nn.Dropout(0.25)
        self.fc1 = nn.Linear(32 * 12 * 12, 64)
        self.drop_fc = nn.Dropout(0.5)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.drop_conv(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.drop_fc(x)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


def train(args, model, device, loader, optimizer, epoch):
    model.train()
    for step, (images, labels) in enumerate(loader):
        images, labels = images.to(device), labels.to(device)
        optimizer.zero_grad()
        loss = F.nll_loss(model(images), labels)
        loss.backward()
        optimizer.step()
        if step % args.log_interval == 0:
            seen = step * len(images)
            print(f"epoch {epoch} [{seen}/{len(loader.dataset)}"
                  f" ({100.0 * step / len(loader):.0f}%)]\ttrain loss {loss.item():.6f}")
            if args.dry_run:
                break


def test(model, device, loader):
    model.eval()
    total_loss = 0.0
    correct = 0
    with torch.no_grad():
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            output = model(images)
            total_loss += F.nll_loss(output, labels, reduction="sum").item()
            predicted = output.argmax(dim=1, keepdim=True)
            correct += predicted.eq(labels.view_as(predicted)).sum().item()
    n = len(loader.dataset)
    total_loss /= n
    print(f"test: mean loss {total_loss:.6f}, correct {correct}/{n} ({100.0 * correct / n:.1f}%)")
    return total_loss


def main(argv=None):
    parser = argparse.ArgumentParser(description="ConvNet on MNIST")
    parser.add_argument("--batch-size", type=int, default=64, metavar="N",
                        help="training batch size (default: 64)")
    parser.add_argument("--test-batch-size", type=int, default=1000, metavar="N",
                        help="evaluation batch size (default: 1000)")
    parser.add_argument("--epochs", type=int, default=10, metavar="N",
                        help="number of epochs (default: 10)")
    parser.add_argument("--lr", type=float, default=1.0, metavar="LR",
                        help="Adadelta learning rate (default: 1.0)")
    parser.add_argument("--gamma", type=float, default=0.7, metavar="G",
                        help="factor the learning rate is multiplied by each epoch (default: 0.7)")
    parser.add_argument("--no-cuda", action="store_true", help="train on the CPU")
    parser.add_argument("--no-shuffle", action="store_true",
                        help="keep the training set in its stored order")
    parser.add_argument("--dry-run", action="store_true", help="stop after one batch")
    parser.add_argument("--seed", type=int, default=1, metavar="S", help="random seed")
    parser.add_argument("--log-interval", type=int, default=10, metavar="N",
                        help="batches between training-loss lines")
    parser.add_argument("--save-model", action="store_true", help="save the trained weights")
    parser.add_argument("--save-path", default="mnist_convnet.pt", help="where to save them")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    use_cuda = not args.no_cuda and torch.cuda.is_available()
    device = torch.device("cuda" if use_cuda else "cpu")

    transform = transforms.Compose([
        transforms.ToTensor(),
        transforms.Normalize((0.1307,), (0.3081,)),
    ])
    train_set = datasets.MNIST("data", train=True, download=True, transform=transform)
    test_set = datasets.MNIST("data", train=False, transform=transform)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size,
                                               shuffle=not args.no_shuffle)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=args.test_batch_size)

    model = ConvNet().to(device)
    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)
    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    test_losses = []
    for epoch in range(1, args.epochs + 1):
        train(args, model, device, train_loader, optimizer, epoch)
        test_losses.append(test(model, device, test_loader))
        scheduler.step()

    if args.save_model:
        torch.save(model.state_dict(), args.save_path)
    return test_losses


if __name__ == "__main__":
    main()
